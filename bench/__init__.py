"""Benchmarks. Run each as a module from the repository root (``python -m bench.bench_service``; the
``make`` targets do), so that ``bench``, ``service``, ``model`` and ``tests.utils`` import as packages."""
