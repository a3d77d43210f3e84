"""Brokers: one interface (:mod:`.base`), one module per backend (:mod:`.local`, :mod:`.redis`)."""
