"""Where outputs live: one storage layer for plain folders and object storage (issue 13).

Imports only :mod:`falassets.settings`; the engine writes through it, and the pipeline, the
review page and the command line read through it.
"""
