"""Data: the pg_catalog functions a governed user may call (deny by default).

One name set per category. A name allows every overload of that name in
pg_catalog; names whose overloads differ in danger are listed in
``ARGUMENT_RULES`` and checked further by ``functions``. Every name here must
exist in PostgreSQL 18's pg_catalog and must not be in ``function_denylist``
(tests/gates/test_catalog_live.py checks both against a real server).

Left out on purpose (deny by default): type I/O and support functions
(``int4in``, ``*_send``...), operator implementations (``int4pl``...), hash
opclass support, planner/AM support, everything in function_denylist.
"""
from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


MATH = _names("""
    abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod
    pi power pow radians round scale sign sqrt trim_scale trunc width_bucket erf erfc gamma lgamma
    acos acosd acosh asin asind asinh atan atan2 atan2d atand atanh cos cosd cosh cot cotd
    sin sind sinh tan tand tanh random random_normal setseed
""")

STRING = _names("""
    ascii bit_length btrim casefold char_length character_length chr concat concat_ws format
    initcap left length lower lpad ltrim md5 normalize is_normalized octet_length overlay
    parse_ident position quote_ident quote_literal quote_nullable repeat replace reverse right
    rpad rtrim split_part starts_with strpos substr substring string_to_array string_to_table
    to_ascii to_bin to_hex to_oct translate unistr upper unicode_version unicode_assigned
    icu_unicode_version encode decode convert convert_from convert_to sha224 sha256 sha384 sha512
    crc32 crc32c get_bit get_byte set_bit set_byte bit_count
    like notlike like_escape similar_escape similar_to_escape
""")

REGEX = _names("""
    regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace
    regexp_split_to_array regexp_split_to_table regexp_substr
""")

DATETIME = _names("""
    age clock_timestamp date_add date_bin date_part date_subtract date_trunc extract isfinite
    justify_days justify_hours justify_interval make_date make_interval make_time make_timestamp
    make_timestamptz now overlaps statement_timestamp timeofday transaction_timestamp timezone
    to_timestamp pg_sleep pg_sleep_for pg_sleep_until
""")

FORMATTING = _names("""
    to_char to_date to_number cash_words pg_size_pretty pg_size_bytes
""")

# Function-style casts: int4(x), text(x), numeric(x, p, s)...
CASTS = _names("""
    bool bit varbit bpchar char varchar name text int2 int4 int8 float4 float8 numeric money
    date time timetz timestamp timestamptz interval bytea oid xml
    cidr macaddr macaddr8 regclass
    box circle line lseg path point polygon
""")

JSON = _names("""
    array_to_json row_to_json to_json to_jsonb json_array_elements json_array_elements_text
    json_array_length json_build_array json_build_object json_each json_each_text json_object
    json_object_keys json_populate_record json_populate_recordset json_strip_nulls json_to_record
    json_to_recordset json_typeof json_extract_path json_extract_path_text
    jsonb_array_elements jsonb_array_elements_text jsonb_array_length jsonb_build_array
    jsonb_build_object jsonb_each jsonb_each_text jsonb_insert jsonb_object jsonb_object_keys
    jsonb_path_exists jsonb_path_exists_tz jsonb_path_match jsonb_path_match_tz jsonb_path_query
    jsonb_path_query_array jsonb_path_query_array_tz jsonb_path_query_first
    jsonb_path_query_first_tz jsonb_path_query_tz jsonb_populate_record
    jsonb_populate_record_valid jsonb_populate_recordset jsonb_pretty jsonb_set jsonb_set_lax
    jsonb_strip_nulls jsonb_to_record jsonb_to_recordset jsonb_typeof jsonb_extract_path
    jsonb_extract_path_text jsonb_concat jsonb_contains jsonb_contained jsonb_delete
    jsonb_delete_path jsonb_exists jsonb_exists_all jsonb_exists_any
""")

ARRAY = _names("""
    array_append array_cat array_prepend array_dims array_fill array_length array_lower
    array_upper array_ndims array_position array_positions array_remove array_replace
    array_reverse array_sample array_shuffle array_sort array_to_string cardinality trim_array
    unnest generate_series generate_subscripts
""")

AGGREGATES = _names("""
    any_value array_agg avg bit_and bit_or bit_xor bool_and bool_or corr count covar_pop
    covar_samp every json_agg json_agg_strict json_object_agg json_object_agg_strict
    json_object_agg_unique json_object_agg_unique_strict jsonb_agg jsonb_agg_strict
    jsonb_object_agg jsonb_object_agg_strict jsonb_object_agg_unique
    jsonb_object_agg_unique_strict max min mode percentile_cont percentile_disc range_agg
    range_intersect_agg regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
    regr_sxy regr_syy stddev stddev_pop stddev_samp string_agg sum var_pop var_samp variance
    xmlagg
""")

WINDOW = _names("""
    cume_dist dense_rank first_value lag last_value lead nth_value ntile percent_rank rank
    row_number
""")

UUID = _names("gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version")

RANGES = _names("""
    daterange datemultirange int4range int4multirange int8range int8multirange numrange
    nummultirange tsrange tsmultirange tstzrange tstzmultirange multirange range_merge isempty
    lower_inc lower_inf upper_inc upper_inf
""")

NETWORK = _names("""
    abbrev broadcast family host hostmask masklen netmask network set_masklen inet_merge
    inet_same_family macaddr8_set7bit
""")

GEOMETRY = _names("""
    area center diameter height width radius npoints isclosed isopen pclose popen bound_box
    diagonal slope isparallel isperp ishorizontal isvertical
""")

# Text search. ts_stat is refused (it runs a query); ts_rewrite only in its
# three-tsquery form (see ARGUMENT_RULES).
TEXT_SEARCH = _names("""
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery tsquery_phrase
    ts_rank ts_rank_cd ts_headline ts_rewrite ts_filter ts_delete setweight strip numnode
    querytree tsvector_to_array array_to_tsvector json_to_tsvector jsonb_to_tsvector
    get_current_ts_config ts_debug ts_lexize ts_parse ts_token_type
""")

# XML over values the user already has. The *_to_xml family runs queries or
# reads tables and is in the denylist.
XML = _names("""
    xmlcomment xmlconcat2 xmlexists xmltext xpath xpath_exists xml_is_well_formed
    xml_is_well_formed_content xml_is_well_formed_document
""")

MISC_VALUES = _names("""
    coalesce greatest least num_nulls num_nonnulls pg_typeof pg_column_size
    pg_input_is_valid pg_input_error_info enum_first enum_last enum_range
""")

# Session facts BI tools and drivers ask for. current_user/session_user report the
# backend service role, not the pgveil user (docs/gates.md). current_setting has
# an argument rule.
SESSION_INFO = _names("""
    current_database current_schema current_schemas current_user session_user user
    getpgusername system_user version current_setting pg_backend_pid pg_is_in_recovery
    pg_client_encoding getdatabaseencoding pg_encoding_to_char pg_char_to_encoding
    pg_encoding_max_length pg_my_temp_schema pg_is_other_temp_schema pg_get_keywords
    pg_timezone_names pg_timezone_abbrevs_zone pg_timezone_abbrevs_abbrevs
""")

# Catalog metadata for psql \d, JDBC, SQLAlchemy, Metabase: names, types,
# keys, defaults, comments, privileges. Definitions of views, rules and
# functions are refused (function_denylist: definitions).
CATALOG_METADATA = _names("""
    format_type obj_description col_description shobj_description pg_get_userbyid
    pg_get_expr pg_get_constraintdef pg_get_indexdef pg_get_triggerdef pg_get_partkeydef
    pg_get_partition_constraintdef pg_get_serial_sequence pg_get_statisticsobjdef
    pg_get_statisticsobjdef_columns pg_get_statisticsobjdef_expressions
    pg_get_function_arguments pg_get_function_identity_arguments pg_get_function_result
    pg_get_replica_identity_index pg_basetype pg_options_to_table
    pg_index_column_has_property pg_index_has_property pg_indexam_has_property
    pg_partition_tree pg_partition_ancestors pg_partition_root pg_relation_is_updatable
    pg_column_is_updatable pg_collation_for pg_relation_is_publishable
    pg_table_is_visible pg_type_is_visible pg_function_is_visible pg_operator_is_visible
    pg_opclass_is_visible pg_opfamily_is_visible pg_collation_is_visible
    pg_conversion_is_visible pg_statistics_obj_is_visible pg_ts_config_is_visible
    pg_ts_dict_is_visible pg_ts_parser_is_visible pg_ts_template_is_visible
    to_regclass to_regcollation to_regnamespace to_regoper to_regoperator to_regproc
    to_regprocedure to_regrole to_regtype to_regtypemod
    has_any_column_privilege has_column_privilege has_database_privilege
    has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
    has_parameter_privilege has_schema_privilege has_sequence_privilege has_server_privilege
    has_table_privilege has_tablespace_privilege has_type_privilege pg_has_role
    acldefault aclexplode makeaclitem aclcontains
""")

#: Every allowed pg_catalog function name.
PG_CATALOG_FUNCTIONS: frozenset[str] = frozenset().union(
    MATH, STRING, REGEX, DATETIME, FORMATTING, CASTS, JSON, ARRAY, AGGREGATES, WINDOW, UUID,
    RANGES, NETWORK, GEOMETRY, TEXT_SEARCH, XML, MISC_VALUES, SESSION_INFO, CATALOG_METADATA,
)

#: Names that are grammar keywords rather than pg_proc entries (COALESCE,
#: GREATEST... parse to their own nodes; a call spelled as a function still
#: cannot reach pg_proc). Excluded from the "exists in pg_catalog" test.
NOT_IN_PG_PROC = frozenset({"coalesce", "greatest", "least", "user"})

#: Pure helper functions of information_schema (JDBC's getPrimaryKeys uses _pg_expandarray).
INFORMATION_SCHEMA_FUNCTIONS = _names("""
    _pg_expandarray _pg_index_position _pg_truetypid _pg_truetypmod _pg_char_max_length
    _pg_char_octet_length _pg_numeric_precision _pg_numeric_precision_radix _pg_numeric_scale
    _pg_datetime_precision _pg_interval_type
""")
