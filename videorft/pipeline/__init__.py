"""Running stages through DVC, so that `videorft run`, Prefect and `dvc repro` agree.

dvc.yaml is the one description of what each stage depends on; this package asks DVC whether
a stage changed (`dvc status`) and runs it (`dvc repro --single-item`), serialising DVC
commands in one checkout.
"""
