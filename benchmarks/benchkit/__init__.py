"""What the benchmark scripts share: op cases, timing, machine information, model loading.

Scripts run as ``python benchmarks/<script>.py``; Python puts ``benchmarks/`` on the path, so
``from benchkit.timing import ...`` needs no path manipulation."""
