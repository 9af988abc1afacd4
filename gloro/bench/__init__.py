"""The pipeline side of gloro-bench: an experiment of a config, its stages, the run-folder names and the tables
and figures of results/. `import gloro` does not import it, so the library needs neither pandas nor
matplotlib; the rule scripts of workflow/ are thin calls into it."""
