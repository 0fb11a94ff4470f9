"""mkdocs-gen-files: the reference pages generated from the code (hvdtrain/reference.py) and from
the bad-input corpus the tests run."""

from pathlib import Path

import mkdocs_gen_files
import yaml

from hvdtrain.reference import bad_input_page, environment_page, exit_codes_page

CASES = yaml.safe_load((Path(__file__).parent.parent / "tests" / "data" / "bad_inputs.yaml").read_text())
PAGES = {"reference/environment.md": environment_page(), "reference/exit-codes.md": exit_codes_page(),
         "reference/bad-input.md": bad_input_page(CASES)}
for name, text in PAGES.items():
    with mkdocs_gen_files.open(name, "w") as page:
        page.write(text)
