"""Microbenchmarks against the peers a user would otherwise pick, one module per family
(``bench_<family>.py``, each with ``run(args) -> Report``). ``convloc bench <family>`` runs them."""
