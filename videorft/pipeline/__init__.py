"""Running stages through DVC, so that `videorft run`, Prefect and `dvc repro` agree.

dvc.yaml is the one description of what each stage depends on. The modules form layers, each
importing only those before it: `command` (every DVC CLI call, serialised by a checkout lock),
`lockfile` (dvc.lock), `status` (whether a stage changed, and why), `remote` (the DVC remote:
configure, pull, push), `runner` (decide skip / pull / run / push for a stage, then act) and
`handoff` (a stage run in another checkout, taken back).
"""
