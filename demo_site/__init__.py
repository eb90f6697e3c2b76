"""The optibase-edge demo: the Paperplane site and a local Segment-compatible sink.

Run from a checkout with ``python -m demo_site``; it is not part of the installed package.
"""
