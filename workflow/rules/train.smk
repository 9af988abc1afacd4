rule train:
    """Train one experiment: final checkpoint, per-epoch history and a summary with provenance."""
    input:
        train_data=experiment_data("train"),
        test_data=experiment_data("test"),
    output:
        model=f"{run_dir()}/model.pt",
        best_model=f"{run_dir()}/model_best_on_test.pt",
        history=f"{run_dir()}/history.csv",
        summary=f"{run_dir()}/train.json",
    params:
        # rewritten after every epoch and removed at the end, so not outputs: a retried job resumes from them
        scratch=f"{run_dir()}/scratch.pt",
        warmup=f"{run_dir()}/warmup.json",
        settings=experiment_settings,
        data=DATA_OPTIONS,
        device=config["device"],
    log:
        f"{RESULTS}/logs/train/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        gpu=GPU,
        slurm_partition=MODEL_PARTITION,
    script:
        "../scripts/train.py"


rule time_steps:
    """Time the trained net's training step past the noise, beside the cost reference's (GloRo's) on the same
    batches in the same job: Table 1's s/epoch and its time ratio. Alone on the job's cores, like training."""
    input:
        model=rules.train.output.model,
        train_data=experiment_data("train"),
    output:
        report=f"{run_dir()}/steps.json",
    params:
        settings=experiment_settings,
        reference=cost_reference_settings,
        data=DATA_OPTIONS,
        device=config["device"],
    log:
        f"{RESULTS}/logs/time_steps/{{experiment}}.log",
    threads: workflow.cores
    resources:
        mem_mb=4000,
        gpu=GPU,
        slurm_partition=MODEL_PARTITION,
    script:
        "../scripts/time_steps.py"
