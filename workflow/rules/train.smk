rule train:
    """Train one experiment: final checkpoint, per-epoch history and a summary with provenance."""
    input:
        train_data=experiment_data("train"),
        test_data=experiment_data("test"),
    output:
        model=run_file(TrainFiles, "model"),
        best_model=run_file(TrainFiles, "best_model"),
        history=run_file(TrainFiles, "history"),
        summary=run_file(TrainFiles, "summary"),
    params:
        # rewritten after every epoch and removed at the end, so not outputs: a retried job resumes from them
        scratch=run_file(TrainFiles, "scratch"),
        warmup=run_file(TrainFiles, "warmup"),
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
        report=run_file(StepCostFiles, "report"),
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
