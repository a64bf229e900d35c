"""The mapping vault: the original<->pseudonym mapping encrypted under its own key,
re-identification with a purpose and a tamper-evident audit, pseudonyms for linkage.
It may import only ``errors``, ``dicom``, ``deid`` and ``warehouse``."""
