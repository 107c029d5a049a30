"""The DVC stages of dvc.yaml: each main reads params, calls the library, writes outs."""
