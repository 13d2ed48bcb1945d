"""Speed and memory benchmarks of lengthgen against the reference implementations (see README.md).

``python bench/run.py --out DIR`` measures; ``python bench/report.py DIR`` assembles
``results/bench/summary.json`` and ``figures/bench_summary.{pdf,png}``.
"""
