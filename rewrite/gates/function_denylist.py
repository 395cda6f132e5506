"""Data: built-in functions classified as dangerous, by the reason they are refused.

The allowlist alone decides (deny by default); this list gives refusals a
reason a user understands and lets the tests prove no dangerous function
slipped onto the allowlist. Categories are the rule names in messages:
``function pg_read_file() is not allowed through pgveil (files)``.
Classified from PostgreSQL 18's pg_proc (docs/gates.md).
"""
from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: category -> exact function names
DENIED_NAMES: dict[str, frozenset[str]] = {
    # Run SQL given as text, or read a whole table/schema/database by name.
    "runs SQL given as text": _names("""
        query_to_xml query_to_xml_and_xmlschema query_to_xmlschema cursor_to_xml
        cursor_to_xmlschema table_to_xml table_to_xml_and_xmlschema table_to_xmlschema
        schema_to_xml schema_to_xml_and_xmlschema schema_to_xmlschema database_to_xml
        database_to_xml_and_xmlschema database_to_xmlschema ts_stat currtid2
        dblink dblink_exec dblink_open dblink_fetch dblink_send_query dblink_get_result
        xmlvalidate
    """),
    # Server files and programs.
    "files": _names("""
        pg_read_file pg_read_binary_file pg_stat_file pg_ls_dir pg_current_logfile
        pg_relation_filepath pg_relation_filenode pg_filenode_relation pg_tablespace_location
        pg_rotate_logfile pg_split_walfile_name pg_walfile_name pg_walfile_name_offset
        pg_wal_summary_contents pg_available_wal_summaries pg_config pg_hba_file_rules
        pg_ident_file_mappings pg_show_all_file_settings pg_import_system_collations
    """),
    "large objects": _names("""
        loread lowrite lo_import lo_export lo_open lo_close lo_creat lo_create lo_unlink
        lo_get lo_put lo_from_bytea lo_lseek lo_lseek64 lo_tell lo_tell64 lo_truncate
        lo_truncate64 has_largeobject_privilege
    """),
    # Reading or changing server settings, outside the SET rules.
    "settings": _names("""
        set_config pg_show_all_settings pg_settings_get_flags pg_reload_conf
        pg_conf_load_time
    """),
    # Other sessions, the server process, locks and notifications.
    "other sessions": _names("""
        pg_cancel_backend pg_terminate_backend pg_blocking_pids pg_safe_snapshot_blocking_pids
        pg_isolation_test_session_is_blocked pg_lock_status pg_log_backend_memory_contexts
        pg_get_backend_memory_contexts pg_get_shmem_allocations pg_get_shmem_allocations_numa
        pg_get_aios pg_get_wait_events pg_notify pg_listening_channels
        pg_notification_queue_usage pg_cursor pg_prepared_statement pg_prepared_xact
        pg_advisory_lock pg_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_all
        pg_advisory_unlock_shared pg_advisory_xact_lock pg_advisory_xact_lock_shared
        pg_try_advisory_lock pg_try_advisory_lock_shared pg_try_advisory_xact_lock
        pg_try_advisory_xact_lock_shared current_query pg_trigger_depth
        inet_client_addr inet_client_port inet_server_addr inet_server_port
        pg_postmaster_start_time pg_get_loaded_modules
    """),
    # Planner statistics, sizes and counters: they hold real values or count hidden rows.
    "statistics": _names("""
        pg_relation_size pg_table_size pg_indexes_size pg_total_relation_size
        pg_database_size pg_tablespace_size pg_column_compression pg_column_toast_chunk_id
        pg_mcv_list_items pg_restore_relation_stats pg_restore_attribute_stats
        pg_clear_relation_stats pg_clear_attribute_stats pg_sequence_last_value
        pg_sequence_parameters pg_get_sequence_data pg_get_multixact_members
    """),
    # Definitions can hold constants and pgveil's own policy views and functions.
    "definitions": _names("""
        pg_get_viewdef pg_get_ruledef pg_get_functiondef pg_get_function_sqlbody
        pg_get_function_arg_default
    """),
    # Writes and transaction-id side effects.
    "writes": _names("""
        nextval setval currval lastval txid_current txid_current_if_assigned
        txid_current_snapshot pg_current_xact_id pg_current_xact_id_if_assigned
        pg_current_snapshot pg_export_snapshot pg_xact_commit_timestamp
        pg_xact_commit_timestamp_origin pg_xact_status txid_status pg_last_committed_xact
        pg_nextoid pg_stop_making_pinned_objects pg_extension_config_dump
        brin_summarize_new_values brin_summarize_range brin_desummarize_range
        gin_clean_pending_list pg_create_restore_point pg_switch_wal pg_promote
        pg_backup_start pg_backup_stop pg_log_standby_snapshot pg_logical_emit_message
        pg_wal_replay_pause pg_wal_replay_resume pg_sync_replication_slots
        pg_drop_replication_slot pg_create_logical_replication_slot
        pg_create_physical_replication_slot pg_copy_logical_replication_slot
        pg_copy_physical_replication_slot pg_replication_slot_advance
    """),
    # Server internals nobody needs through a governance proxy.
    "server internals": _names("""
        pg_control_checkpoint pg_control_init pg_control_recovery pg_control_system
        pg_get_replication_slots pg_get_wal_replay_pause_state pg_get_wal_resource_managers
        pg_get_wal_summarizer_state pg_current_wal_flush_lsn pg_current_wal_insert_lsn
        pg_current_wal_lsn pg_last_wal_receive_lsn pg_last_wal_replay_lsn
        pg_last_xact_replay_timestamp pg_is_wal_replay_paused pg_event_trigger_ddl_commands
        pg_event_trigger_dropped_objects pg_event_trigger_table_rewrite_oid
        pg_event_trigger_table_rewrite_reason pg_available_extensions
        pg_available_extension_versions pg_extension_update_paths pg_get_publication_tables
        pg_show_replication_origin_status pg_get_catalog_foreign_keys pg_get_acl
        pg_describe_object pg_identify_object pg_identify_object_as_address
        pg_get_object_address pg_tablespace_databases row_security_active amvalidate
        fmgr_c_validator fmgr_internal_validator fmgr_sql_validator plpgsql_validator
        postgresql_fdw_validator satisfies_hash_partition pg_jit_available pg_numa_available
    """),
}

#: category -> name prefixes (whole families)
DENIED_PREFIXES: dict[str, tuple[str, ...]] = {
    "runs SQL given as text": ("dblink",),
    "files": ("pg_ls_", "pg_read_", "pg_file_"),
    "large objects": ("lo_",),
    "statistics": ("pg_stat_", "pg_statio_"),
    "other sessions": ("pg_advisory", "pg_try_advisory"),
    "writes": ("txid_", "pg_replication_origin", "pg_logical_slot_", "binary_upgrade_"),
}


def denied_category(name: str) -> str | None:
    """The reason a built-in function is refused, if it is classified dangerous."""
    for category, names in DENIED_NAMES.items():
        if name in names:
            return category
    for category, prefixes in DENIED_PREFIXES.items():
        if name.startswith(prefixes):
            return category
    return None
