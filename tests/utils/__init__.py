"""Support shared by the tests and the benchmarks: starting a server, scraping its metrics, payloads."""
