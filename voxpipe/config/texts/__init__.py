"""Shipped wording per language (JSON files read by ``voxpipe.config.locale_texts``)."""
