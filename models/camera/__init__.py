"""The camera pipeline: frames, motion gating, detectors, tracking, counts and zones.

No frame leaves the device: the pipeline turns pixels into counts, occupancy and queue lengths,
and only an explicitly requested snapshot writes an image (to a local file).
"""
