rule certify:
    """Freeze the trained net and certify the test split at the eval ε with each of the experiment's certifiers."""
    input:
        model=rules.train.output.model,
        test_data=experiment_data("test"),
    output:
        report=run_file(CertifyFiles, "report"),
        radii=run_file(CertifyFiles, "radii"),
        certificates=run_file(CertifyFiles, "certificates"),
    params:
        settings=experiment_settings,
        data=DATA_OPTIONS,
        device=config["device"],
        evaluation=config["evaluation"],
    log:
        f"{RESULTS}/logs/certify/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/certify/{{experiment}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        gpu=GPU,
        slurm_partition=MODEL_PARTITION,
    script:
        "../scripts/certify.py"
