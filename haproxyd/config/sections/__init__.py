"""One module per section of the configuration file (or per group of small sections).

`haproxyd.config.schema` assembles them into `Config` and re-exports every model, so
importers name the schema, not the module a section happens to live in.
"""
