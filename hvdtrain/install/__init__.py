"""Installing Horovod where users are: detect the toolchain, patch the sdist, build, cache, install.

``toolchain`` finds compilers, CUDA and NCCL (reads files, runs nothing); ``plan`` turns what was
found into a ``BuildPlan`` (pure); ``patches`` holds our diffs to Horovod; ``build`` runs the few
commands. ``doctor`` checks that what is installed fits together; ``preflight`` asks every host's.
"""
