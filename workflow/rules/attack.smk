rule attack:
    """PGD accuracy at the eval ε, and an audit attacking every point any certifier certified (a broken one fails the run)."""
    input:
        model=rules.train.output.model,
        certificates=rules.certify.output.certificates,
        test_data=experiment_data("test"),
    output:
        report=run_file(AttackFiles, "report"),
    params:
        settings=experiment_settings,
        data=DATA_OPTIONS,
        device=config["device"],
        evaluation=config["evaluation"],
    log:
        main=f"{RESULTS}/logs/attack/{{experiment}}.log",
        # a log, not an output: Snakemake keeps it when a broken certificate fails the job
        violations=run_file(AttackFiles, "violations"),
    benchmark:
        f"{RESULTS}/benchmarks/attack/{{experiment}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        gpu=GPU,
        slurm_partition=MODEL_PARTITION,
    script:
        "../scripts/attack.py"
