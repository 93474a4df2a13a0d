"""gatekeeper: decides from live telemetry whether a blue/green release may take traffic.

Data flows one way: rule -> query -> measurement -> judgement -> verdict -> action.
"""

__version__ = "0.1.0"
