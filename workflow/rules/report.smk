rule report:
    """Aggregate every experiment into the tables and figures of results/."""
    input:
        train=expand(rules.train.output.summary, experiment=EXPERIMENTS),
        history=expand(rules.train.output.history, experiment=EXPERIMENTS),
        certify=expand(rules.certify.output.report, experiment=EXPERIMENTS),
        attack=expand(rules.attack.output.report, experiment=EXPERIMENTS),
        bounds=expand(rules.bounds.output.report, experiment=EXPERIMENTS),
        published=workflow.source_path("../resources/published.csv"),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        vra_by_radius=f"{RESULTS}/tables/vra_by_radius.csv",
        table1=multiext(f"{RESULTS}/tables/table1", ".csv", ".md", ".tex"),
        cost=multiext(f"{RESULTS}/tables/certification_cost", ".csv", ".md"),
        figures=multiext(f"{RESULTS}/figures/vra_by_radius", ".pdf", ".png"),
        curves=multiext(f"{RESULTS}/figures/training_curves", ".pdf", ".png"),
        epoch_cost=multiext(f"{RESULTS}/figures/epoch_cost", ".pdf", ".png"),
        tightness=multiext(f"{RESULTS}/figures/tightness", ".pdf", ".png"),
    params:
        experiments=EXPERIMENTS,
        config=config["experiments"],
    log:
        f"{RESULTS}/logs/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/report.py"
