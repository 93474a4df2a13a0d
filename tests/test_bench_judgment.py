"""A tiny run of the judgment benchmark's simulation (the full one is `make bench`)."""

from bench import judgment


def test_tiny_simulation_detects_regressions_and_spares_identical_releases():
    """30 soaks of 30 minutes at 10 req/s: x10 is caught in every soak, identical releases in
    (almost) none, and the tables render."""
    results = judgment.simulate(30, rps_levels=(10.0,), looks=120, mann_whitney_soaks=10)
    rates = results["rates"]
    assert rates["10 rps x10"]["sequential"]["probability"] >= 0.9
    assert rates["10 rps x1"]["sequential"]["probability"] <= 0.1
    assert results["latency"]["10 rps p99 +60%"]["sequential"]["probability"] >= 0.9
    assert results["minutes_to_pass"]["100 rps"]["errors 0.1 %"] is not None
    text = judgment.markdown({"simulation": results})
    assert "| 10 rps x5 | sequential (new) |" in text
    assert "previous floor rules" in text and "Mann-Whitney each look" in text
