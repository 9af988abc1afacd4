# Each data set is read from its sources once, into one cached file per split, before any job uses it.
# A shell rule around `python -m gloro.data prepare`, so that it reruns only when its command changes.
# A local rule: on a cluster it runs where the login node can reach the network (when download: true).
localrules:
    prepare_data,


rule prepare_data:
    """Read one data set from its official files (or a checked download) and write its cached splits."""
    output:
        train=data_file("{dataset}", "train"),
        test=data_file("{dataset}", "test"),
    params:
        python=sys.executable,
        options=prepare_options(),
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{params.python} -m gloro.data prepare {wildcards.dataset} {params.options} --quiet > {log} 2>&1"
