"""Sources fetch numbers for rules; they never judge.

One module per source (prometheus, alertmanager, probes, logs, kubernetes), all behind the
`Source` protocol in `base`. A source answers one call per rule covering every namespace.
"""
