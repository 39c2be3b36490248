"""Foundation: errors, settings, names, message formats, the Pub/Sub seam and batch topology.

Imported by every role (splitter, worker, launcher) and front end; imports none of them.
"""
