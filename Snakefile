# gloro-bench: `snakemake --cores all` trains, certifies and attacks every experiment of the config and
# regenerates the tables and figures in results/ (see results/README.md).
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The default config, unless --configfile names another (whose experiments then replace, not join, these).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"

RESULTS = config["results"]
EXPERIMENTS = selected_experiments(config)


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    dataset=DATASET_PATTERN,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/certify.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/bounds.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,


onsuccess:
    # what a user came for, printed where they look (the file holds the same table)
    table = Path(RESULTS) / "tables" / "table1.md"
    if table.is_file():
        print(f"\n{table}:\n\n{table.read_text()}")
    if left_out_note():
        print(left_out_note())
