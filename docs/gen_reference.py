"""mkdocs-gen-files: the reference pages generated from the code (hvdtrain/reference.py)."""

import mkdocs_gen_files

from hvdtrain.reference import environment_page, exit_codes_page

for name, text in (("reference/environment.md", environment_page()), ("reference/exit-codes.md", exit_codes_page())):
    with mkdocs_gen_files.open(name, "w") as page:
        page.write(text)
