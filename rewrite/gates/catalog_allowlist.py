"""Data: the pg_catalog and information_schema relations a governed user may read.

What BI tools, drivers and psql need to list schemas, tables, columns, types,
keys, indexes and comments. Everything else in those schemas is refused:
statistics (pg_stats, pg_statistic*), activity and locks (pg_stat_*, pg_locks),
settings and server files (pg_settings, pg_file_settings, pg_hba_file_rules,
pg_config), roles and credentials (pg_authid, pg_roles, pg_shadow,
pg_user_mapping*, pg_subscription), definitions (pg_rewrite, pg_rules,
pg_policy), large objects and sequences' current values (pg_sequences).
"""
from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


PG_CATALOG_RELATIONS = _names("""
    pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_cast pg_class pg_collation
    pg_constraint pg_conversion pg_database pg_depend pg_description pg_enum pg_extension
    pg_index pg_inherits pg_language pg_namespace pg_opclass pg_operator pg_opfamily
    pg_partitioned_table pg_proc pg_range pg_sequence pg_shdescription pg_tablespace
    pg_transform pg_trigger pg_ts_config pg_ts_config_map pg_ts_dict pg_ts_parser
    pg_ts_template pg_type
    pg_indexes pg_tables pg_views pg_matviews pg_timezone_abbrevs pg_timezone_names
""")

INFORMATION_SCHEMA_RELATIONS = _names("""
    information_schema_catalog_name schemata tables columns views key_column_usage
    table_constraints referential_constraints constraint_column_usage constraint_table_usage
    check_constraints domains domain_constraints domain_udt_usage element_types attributes
    user_defined_types sequences routines parameters character_sets collations
    collation_character_set_applicability table_privileges column_privileges
    usage_privileges routine_privileges udt_privileges data_type_privileges triggers
    triggered_update_columns view_table_usage view_column_usage view_routine_usage
    column_udt_usage column_domain_usage routine_column_usage routine_table_usage
    routine_routine_usage routine_sequence_usage column_column_usage
    sql_features sql_implementation_info sql_parts sql_sizing
""")

ALLOWED_RELATIONS: dict[str, frozenset[str]] = {
    "pg_catalog": PG_CATALOG_RELATIONS,
    "information_schema": INFORMATION_SCHEMA_RELATIONS,
}

#: Refused relations that psql's ``\d table`` reads (row-level security policies and
#: the roles they name, extended statistics objects, publications). Allowed only when
#: the caller serves them empty (``GateContext.served_empty``), as the rewrite engine
#: does: the statement then runs and lists nothing from them.
SERVABLE_EMPTY: frozenset[tuple[str, str]] = frozenset(("pg_catalog", n) for n in _names("""
    pg_policy pg_roles pg_statistic_ext pg_publication pg_publication_namespace pg_publication_rel
"""))

#: Refused relations allowed when the caller serves them filtered (``GateContext.served``):
#: pg_settings with built-in settings only (what SHOW and current_setting() may read; no
#: custom, dotted names). pgjdbc's getImportedKeys reads max_index_keys from it.
#: pg_stat_user_tables with only relid, schemaname and relname, every counter NULL
#: (Metabase's sync joins n_live_tup as an estimated row count).
SERVABLE_FILTERED: frozenset[tuple[str, str]] = frozenset({("pg_catalog", "pg_settings"),
                                                           ("pg_catalog", "pg_stat_user_tables")})

#: Sensitive relations that stop being sensitive when the caller serves their
#: SENSITIVE_COLUMNS as NULL (``GateContext.served``): pgjdbc's getIndexInfo names
#: pg_class.reltuples and relpages.
SERVABLE_NULLED: frozenset[tuple[str, str]] = frozenset({("pg_catalog", "pg_class")})

#: Columns of allowed relations that leak anyway: row estimates count hidden rows
#: (threat 7), definitions may show pgveil's own policy views and functions in
#: pg_temp. A statement reading one of these relations may not name these
#: columns, use ``*``, a whole-row reference, or an alias column list.
SENSITIVE_COLUMNS: dict[tuple[str, str], frozenset[str]] = {
    ("pg_catalog", "pg_class"): _names("reltuples relpages relallvisible relallfrozen"),
    ("pg_catalog", "pg_proc"): _names("prosrc probin prosqlbody"),
    ("pg_catalog", "pg_views"): _names("definition"),
    ("pg_catalog", "pg_matviews"): _names("definition"),
    ("information_schema", "views"): _names("view_definition"),
    ("information_schema", "routines"): _names("routine_definition"),
}

#: Every relation PostgreSQL 18 has in pg_catalog (tables and views). An
#: unqualified name in this set, or any unqualified ``pg_`` name, is resolved to
#: pg_catalog (which is searched before the user's schemas) and must be allowed.
PG_CATALOG_KNOWN = PG_CATALOG_RELATIONS | _names("""
    pg_auth_members pg_authid pg_db_role_setting pg_default_acl pg_event_trigger
    pg_foreign_data_wrapper pg_foreign_server pg_foreign_table pg_init_privs pg_largeobject
    pg_largeobject_metadata pg_parameter_acl pg_policy pg_publication pg_publication_namespace
    pg_publication_rel pg_replication_origin pg_rewrite pg_seclabel pg_shdepend pg_shseclabel
    pg_statistic pg_statistic_ext pg_statistic_ext_data pg_subscription pg_subscription_rel
    pg_user_mapping pg_aios pg_available_extension_versions pg_available_extensions
    pg_backend_memory_contexts pg_config pg_cursors pg_file_settings pg_group
    pg_hba_file_rules pg_ident_file_mappings pg_locks pg_policies pg_prepared_statements
    pg_prepared_xacts pg_publication_tables pg_replication_origin_status
    pg_replication_slots pg_roles pg_rules pg_seclabels pg_sequences pg_settings pg_shadow
    pg_shmem_allocations pg_shmem_allocations_numa pg_stats pg_stats_ext pg_stats_ext_exprs
    pg_user pg_user_mappings pg_wait_events
""")
