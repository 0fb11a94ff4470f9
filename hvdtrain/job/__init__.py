"""The contract between ``hvdtrain run`` and each rank: the run directory (``paths``), the
variables every launcher sets (``ranks``), the signals and exit codes (``signals``), the
supervisor around each rank (parent side), the progress a rank leaves behind (rank side), and
the failure report built from both."""
