"""Traffic-signal control: the intersection model, its safety envelope and the stage controller.

The controller never talks to an output: it asks the :class:`~control.traffic.envelope.SafetyEnvelope`,
which alone holds the signal driver and refuses any state change that breaks a rule.
"""
