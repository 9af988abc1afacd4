rule report:
    """Aggregate every experiment into the tables and figures of results/ (captions for snakemake --report)."""
    input:
        train=expand(rules.train.output.summary, experiment=EXPERIMENTS),
        history=expand(rules.train.output.history, experiment=EXPERIMENTS),
        certify=expand(rules.certify.output.report, experiment=EXPERIMENTS),
        attack=expand(rules.attack.output.report, experiment=EXPERIMENTS),
        bounds=expand(rules.bounds.output.report, experiment=EXPERIMENTS),
        steps=expand(rules.time_steps.output.report, experiment=EXPERIMENTS),
        published=workflow.source_path("../resources/published.csv"),
    output:
        runs=report(f"{RESULTS}/tables/runs.csv", caption="../report/runs.rst", category="Tables"),
        vra_by_radius=f"{RESULTS}/tables/vra_by_radius.csv",
        table1=report(f"{RESULTS}/tables/table1.csv", caption="../report/table1.rst", category="Tables"),
        table1_md=f"{RESULTS}/tables/table1.md",
        table1_tex=f"{RESULTS}/tables/table1.tex",
        cost=report(f"{RESULTS}/tables/certification_cost.csv", caption="../report/cost.rst", category="Tables"),
        cost_md=f"{RESULTS}/tables/certification_cost.md",
        comparison=report(
            f"{RESULTS}/tables/certifier_comparison.csv", caption="../report/comparison.rst", category="Tables"
        ),
        comparison_md=f"{RESULTS}/tables/certifier_comparison.md",
        vra_png=report(f"{RESULTS}/figures/vra_by_radius.png", caption="../report/vra_by_radius.rst", category="Figures"),
        vra_pdf=f"{RESULTS}/figures/vra_by_radius.pdf",
        curves_png=report(
            f"{RESULTS}/figures/training_curves.png", caption="../report/training_curves.rst", category="Figures"
        ),
        curves_pdf=f"{RESULTS}/figures/training_curves.pdf",
        epoch_cost_png=report(f"{RESULTS}/figures/epoch_cost.png", caption="../report/epoch_cost.rst", category="Figures"),
        epoch_cost_pdf=f"{RESULTS}/figures/epoch_cost.pdf",
        tightness_png=report(f"{RESULTS}/figures/tightness.png", caption="../report/tightness.rst", category="Figures"),
        tightness_pdf=f"{RESULTS}/figures/tightness.pdf",
    params:
        experiments=EXPERIMENTS,
        not_run=not_run_experiments(config),
    log:
        f"{RESULTS}/logs/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        slurm_partition=REPORT_PARTITION,
    script:
        "../scripts/report.py"
