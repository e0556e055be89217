"""Pure planning functions: ``(SequenceSet, params) -> Plan``, no files, no CLI."""
