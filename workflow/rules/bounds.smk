rule bounds:
    """Local vs global certification of the same model, and the global bound's tightness (empirical lower bound)."""
    input:
        model=rules.train.output.model,
        test_data=experiment_data("test"),
    output:
        report=run_file(BoundsFiles, "report"),
    params:
        settings=experiment_settings,
        data=DATA_OPTIONS,
        device=config["device"],
        evaluation=config["evaluation"],
    log:
        f"{RESULTS}/logs/bounds/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bounds/{{experiment}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        gpu=GPU,
        slurm_partition=MODEL_PARTITION,
    script:
        "../scripts/bounds.py"
