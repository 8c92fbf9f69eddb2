"""A local CardSavr stand-in speaking the real protocol; see sandbox/README.md.

It imports nothing from the portal except the shared ``cardsavr.crypto``.
"""
