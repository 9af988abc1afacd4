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
        runs=report(result_file("runs"), caption="../report/runs.rst", category="Tables"),
        vra_by_radius=result_file("vra_by_radius"),
        table1=report(result_file("table1"), caption="../report/table1.rst", category="Tables"),
        table1_md=result_file("table1_md"),
        table1_tex=result_file("table1_tex"),
        cost=report(result_file("cost"), caption="../report/cost.rst", category="Tables"),
        cost_md=result_file("cost_md"),
        comparison=report(result_file("comparison"), caption="../report/comparison.rst", category="Tables"),
        comparison_md=result_file("comparison_md"),
        vra_png=report(result_file("vra_png"), caption="../report/vra_by_radius.rst", category="Figures"),
        vra_pdf=result_file("vra_pdf"),
        curves_png=report(result_file("curves_png"), caption="../report/training_curves.rst", category="Figures"),
        curves_pdf=result_file("curves_pdf"),
        epoch_cost_png=report(result_file("epoch_cost_png"), caption="../report/epoch_cost.rst", category="Figures"),
        epoch_cost_pdf=result_file("epoch_cost_pdf"),
        tightness_png=report(result_file("tightness_png"), caption="../report/tightness.rst", category="Figures"),
        tightness_pdf=result_file("tightness_pdf"),
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
