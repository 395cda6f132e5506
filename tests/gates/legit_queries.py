"""Legitimate BI, driver and analyst statements that the gates must let through."""

PSQL = [
    ("psql_dt", """SELECT n.nspname as "Schema", c.relname as "Name",
      CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
      WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
      WHEN 'p' THEN 'partitioned table' END as "Type",
      pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
    FROM pg_catalog.pg_class c
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
    WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema' AND pg_catalog.pg_table_is_visible(c.oid)
    ORDER BY 1,2"""),
    ("psql_d_lookup", """SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname OPERATOR(pg_catalog.~) '^(items)$' COLLATE pg_catalog.default
      AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3"""),
    ("psql_d_table", """SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers,
      c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '',
      c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE
      c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
    FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
    LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid) WHERE c.oid = '16384'"""),
    ("psql_d_columns", """SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
      (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d
       WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
      a.attnotnull,
      (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
       WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
      a.attidentity, a.attgenerated
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""),
    ("psql_d_indexes", """SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid,
      pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), pg_catalog.pg_get_constraintdef(con.oid, true),
      contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace
    FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
      LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid
        AND contype IN ('p','u','x'))
    WHERE c.oid = '16384' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
    ORDER BY i.indisprimary DESC, c2.relname"""),
    ("psql_d_fkeys", """SELECT true as sametable, conname, pg_catalog.pg_get_constraintdef(r.oid, true) as condef,
      conrelid::pg_catalog.regclass AS ontable
    FROM pg_catalog.pg_constraint r
    WHERE r.conrelid = '16384' AND r.contype = 'f' AND conparentid = 0 ORDER BY conname"""),
    ("psql_d_triggers", """SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled, t.tgisinternal
    FROM pg_catalog.pg_trigger t WHERE t.tgrelid = '16384' AND (NOT t.tgisinternal OR (t.tgisinternal
      AND t.tgenabled = 'D')) ORDER BY 1"""),
    ("psql_d_inherits", """SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
    WHERE c.oid = i.inhparent AND i.inhrelid = '16384' AND c.relkind != 'p' AND c.relkind != 'I'
    ORDER BY inhseqno"""),
    ("psql_dn", """SELECT n.nspname AS "Name", pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
    FROM pg_catalog.pg_namespace n WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
    ORDER BY 1"""),
    ("psql_l", """SELECT d.datname as "Name", pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
      pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
      CASE d.datlocprovider WHEN 'b' THEN 'builtin' WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END
        AS "Locale Provider",
      d.datcollate as "Collate", d.datctype as "Ctype",
      pg_catalog.array_to_string(d.datacl, E'\\n') AS "Access privileges"
    FROM pg_catalog.pg_database d ORDER BY 1"""),
    ("psql_df", """SELECT n.nspname as "Schema", p.proname as "Name",
      pg_catalog.pg_get_function_result(p.oid) as "Result data type",
      pg_catalog.pg_get_function_arguments(p.oid) as "Argument data types",
      CASE p.prokind WHEN 'a' THEN 'agg' WHEN 'w' THEN 'window' WHEN 'p' THEN 'proc' ELSE 'func' END as "Type"
    FROM pg_catalog.pg_proc p LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE pg_catalog.pg_function_is_visible(p.oid) AND n.nspname <> 'pg_catalog'
      AND n.nspname <> 'information_schema' ORDER BY 1, 2, 4"""),
    ("psql_dT", """SELECT n.nspname as "Schema", pg_catalog.format_type(t.oid, NULL) AS "Name",
      pg_catalog.obj_description(t.oid, 'pg_type') as "Description"
    FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE (t.typrelid = 0 OR (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid))
      AND NOT EXISTS(SELECT 1 FROM pg_catalog.pg_type el WHERE el.oid = t.typelem AND el.typarray = t.oid)
      AND pg_catalog.pg_type_is_visible(t.oid) ORDER BY 1, 2"""),
    ("psql_dx", """SELECT e.extname AS "Name", e.extversion AS "Version", n.nspname AS "Schema",
      c.description AS "Description" FROM pg_catalog.pg_extension e
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      LEFT JOIN pg_catalog.pg_description c ON c.objoid = e.oid
        AND c.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass ORDER BY 1"""),
    ("psql_d_comments", """SELECT pg_catalog.obj_description(c.oid, 'pg_class'),
      pg_catalog.col_description(c.oid, 1) FROM pg_catalog.pg_class c WHERE c.relname = 'items'"""),
    ("psql_dp", """SELECT n.nspname, c.relname, pg_catalog.array_to_string(c.relacl, E'\\n')
      FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r','v','m','S','f','p') AND n.nspname !~ '^pg_' ORDER BY 1, 2"""),
    ("psql_enum_values", """SELECT pg_catalog.array_to_string(ARRAY(SELECT e.enumlabel FROM pg_catalog.pg_enum e
      WHERE e.enumtypid = 42 ORDER BY e.enumsortorder), E'\\n')"""),
    ("psql_tables_view", "SELECT schemaname, tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"),
    ("psql_indexes_view", "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'items'"),
    ("psql_views_names", "SELECT schemaname, viewname FROM pg_views WHERE schemaname NOT IN ('pg_catalog')"),
]

INFORMATION_SCHEMA = [
    ("is_tables", """SELECT table_schema, table_name, table_type FROM information_schema.tables
      WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"""),
    ("is_columns", """SELECT column_name, data_type, is_nullable, column_default, ordinal_position
      FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'items'
      ORDER BY ordinal_position"""),
    ("is_columns_star", "SELECT * FROM information_schema.columns WHERE table_name = 'items'"),
    ("is_schemata", "SELECT schema_name FROM information_schema.schemata"),
    ("is_views_names", "SELECT table_schema, table_name, is_updatable FROM information_schema.views"),
    ("is_keys", """SELECT tc.constraint_name, kcu.column_name, ccu.table_name AS foreign_table_name,
      ccu.column_name AS foreign_column_name
    FROM information_schema.table_constraints AS tc
    JOIN information_schema.key_column_usage AS kcu
      ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema
    JOIN information_schema.constraint_column_usage AS ccu ON ccu.constraint_name = tc.constraint_name
    WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_name = 'items'"""),
    ("is_referential", "SELECT constraint_name, update_rule, delete_rule FROM information_schema.referential_constraints"),
    ("is_routines_names", "SELECT routine_schema, routine_name, data_type FROM information_schema.routines"),
    ("is_privileges", "SELECT grantee, privilege_type FROM information_schema.table_privileges WHERE table_name = 'items'"),
    ("is_sequences", "SELECT sequence_name, start_value, increment FROM information_schema.sequences"),
]

DRIVERS = [
    ("sqla_version", "select pg_catalog.version()"),
    ("sqla_current_schema", "select current_schema()"),
    ("sqla_show_isolation", "show transaction isolation level"),
    ("sqla_show_scs", "show standard_conforming_strings"),
    ("sqla_has_table", """SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class
      JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace
      WHERE pg_catalog.pg_class.relname = 'items' AND pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm'])
      AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'"""),
    ("sqla_columns", """SELECT pg_catalog.pg_attribute.attname AS name,
      pg_catalog.format_type(pg_catalog.pg_attribute.atttypid, pg_catalog.pg_attribute.atttypmod) AS format_type,
      (SELECT pg_catalog.pg_get_expr(pg_catalog.pg_attrdef.adbin, pg_catalog.pg_attrdef.adrelid) AS pg_get_expr_1
       FROM pg_catalog.pg_attrdef WHERE pg_catalog.pg_attrdef.adrelid = pg_catalog.pg_attribute.attrelid
       AND pg_catalog.pg_attrdef.adnum = pg_catalog.pg_attribute.attnum AND pg_catalog.pg_attribute.atthasdef) AS "default",
      pg_catalog.pg_attribute.attnotnull AS not_null, pg_catalog.pg_class.relname AS table_name,
      pg_catalog.pg_description.description AS comment, pg_catalog.pg_attribute.attgenerated AS generated,
      (SELECT json_build_object('always', pg_catalog.pg_attribute.attidentity = 'a', 'start',
         pg_catalog.pg_sequence.seqstart, 'increment', pg_catalog.pg_sequence.seqincrement) AS json_build_object_1
       FROM pg_catalog.pg_sequence WHERE pg_catalog.pg_attribute.attidentity != ''
       AND pg_catalog.pg_sequence.seqrelid = CAST(CAST(pg_catalog.pg_get_serial_sequence(
         CAST(CAST(pg_catalog.pg_attribute.attrelid AS REGCLASS) AS TEXT), pg_catalog.pg_attribute.attname)
         AS REGCLASS) AS OID)) AS identity_options
    FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute
      ON pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attribute.attnum > 0
      AND NOT pg_catalog.pg_attribute.attisdropped
    LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = pg_catalog.pg_attribute.attrelid
      AND pg_catalog.pg_description.objsubid = pg_catalog.pg_attribute.attnum
    JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace
    WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm'])
      AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid)
      AND pg_catalog.pg_namespace.nspname != 'pg_catalog' AND pg_catalog.pg_class.relname IN ('items')
    ORDER BY pg_catalog.pg_class.relname, pg_catalog.pg_attribute.attnum"""),
    ("jdbc_columns", """SELECT * FROM (SELECT n.nspname,c.relname,a.attname,a.atttypid,
      a.attnotnull OR (t.typtype = 'd' AND t.typnotnull) AS attnotnull,a.atttypmod,a.attlen,t.typtypmod,
      row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS attnum,
      nullif(a.attidentity, '') as attidentity, nullif(a.attgenerated, '') as attgenerated,
      pg_catalog.pg_get_expr(def.adbin, def.adrelid) AS adsrc,dsc.description,t.typbasetype,t.typtype
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON (c.relnamespace = n.oid)
    JOIN pg_catalog.pg_attribute a ON (a.attrelid=c.oid) JOIN pg_catalog.pg_type t ON (a.atttypid = t.oid)
    LEFT JOIN pg_catalog.pg_attrdef def ON (a.attrelid=def.adrelid AND a.attnum = def.adnum)
    LEFT JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)
    LEFT JOIN pg_catalog.pg_class dc ON (dc.oid=dsc.classoid AND dc.relname='pg_class')
    LEFT JOIN pg_catalog.pg_namespace dn ON (dc.relnamespace=dn.oid AND dn.nspname='pg_catalog')
    WHERE c.relkind in ('r','p','v','f','m') and a.attnum > 0 AND NOT a.attisdropped
      AND n.nspname LIKE 'public' AND c.relname LIKE '%') c WHERE true ORDER BY nspname,c.relname,attnum"""),
    ("jdbc_primary_keys", """SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, ct.relname AS TABLE_NAME,
      a.attname AS COLUMN_NAME, (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ,
      ci.relname AS PK_NAME, information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM
    FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)
    JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)
    JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid) JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid)
    WHERE true AND ct.relname = E'items' AND i.indisprimary"""),
    ("jdbc_type_info", "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE pg_type.oid = 23 ORDER BY sp.r, pg_type.oid DESC"),
    ("metabase_privileges", """SELECT nspname AS table_schem, has_schema_privilege(n.oid, 'USAGE') AS usage
      FROM pg_namespace n WHERE nspname NOT IN ('pg_catalog', 'information_schema')"""),
    ("metabase_table_priv", "SELECT has_table_privilege('public.items', 'SELECT')"),
    ("dbeaver_session", "SELECT current_schema(), session_user, current_user, current_database()"),
    ("npgsql_types", """SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid
      FROM (SELECT typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull,
        typ.typrelid AS elemtypoid FROM pg_type AS typ) AS t JOIN pg_namespace AS ns ON (ns.oid = typnamespace)"""),
    ("keywords", "SELECT word FROM pg_get_keywords() WHERE catcode = 'R'"),
    ("set_app_name", "SET application_name = 'Metabase v0.50'"),
    ("set_datestyle", "SET DateStyle = ISO, MDY"),
    ("set_timezone", "SET TIME ZONE 'UTC'"),
    ("set_local_timeout", "SET LOCAL statement_timeout = '30s'"),
    ("set_extra_float", "SET extra_float_digits = 3"),
    ("reset_timezone", "RESET timezone"),
    ("set_client_min_messages", "SET client_min_messages TO warning"),
    ("set_intervalstyle", "SET intervalstyle = 'iso_8601'"),
    ("show_timezone", "SHOW TimeZone"),
    ("current_setting_builtin", "SELECT current_setting('server_version_num')::int"),
    ("begin", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
    ("start_transaction", "START TRANSACTION"),
    ("savepoint", "SAVEPOINT sp1"),
    ("rollback_to", "ROLLBACK TO SAVEPOINT sp1"),
    ("release", "RELEASE SAVEPOINT sp1"),
    ("commit", "COMMIT"),
    ("set_transaction", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"),
    ("session_characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
    ("declare_cursor", "DECLARE c1 NO SCROLL CURSOR WITH HOLD FOR SELECT id, name FROM items ORDER BY id"),
    ("fetch", "FETCH FORWARD 100 FROM c1"),
    ("move", "MOVE ABSOLUTE 10 IN c1"),
    ("close", "CLOSE c1"),
    ("prepare", "PREPARE q(int) AS SELECT name FROM items WHERE id = $1"),
    ("execute", "EXECUTE q(42)"),
    ("deallocate", "DEALLOCATE ALL"),
    ("unlisten", "UNLISTEN *"),
    ("discard_plans", "DISCARD PLANS"),
    ("copy_query_stdout", "COPY (SELECT id, name FROM items WHERE active) TO STDOUT WITH (FORMAT csv, HEADER)"),
    ("copy_table_stdout", "COPY items TO STDOUT"),
    ("copy_cols_stdout", "COPY public.items (id, name) TO STDOUT (FORMAT binary)"),
]

ANALYTICS = [
    ("window_running", """SELECT day, sum(price) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
      AS running, rank() OVER (PARTITION BY active ORDER BY price DESC) FROM items"""),
    ("window_lag", "SELECT id, price - lag(price) OVER w AS delta, ntile(4) OVER w FROM items WINDOW w AS (ORDER BY id)"),
    ("cte_chain", """WITH daily AS (SELECT date_trunc('day', created) AS d, count(*) AS n FROM items GROUP BY 1),
      ranked AS (SELECT d, n, dense_rank() OVER (ORDER BY n DESC) AS r FROM daily)
      SELECT * FROM ranked WHERE r <= 3"""),
    ("recursive_cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT sum(n) FROM r"),
    ("json_ops", """SELECT doc->>'n' AS n, doc @> '{"odd": true}' AS odd, jsonb_path_query_first(doc, '$.n'),
      jsonb_agg(doc ORDER BY id) FILTER (WHERE doc IS NOT NULL) FROM items GROUP BY doc"""),
    ("json_each", "SELECT key, value FROM items, jsonb_each(doc) WHERE id < 10"),
    ("json_table", "SELECT jt.* FROM items, JSON_TABLE(doc, '$' COLUMNS (n int PATH '$.n', odd bool PATH '$.odd')) jt"),
    ("json_constructors", "SELECT JSON_OBJECT('id' VALUE id, 'name' VALUE name), JSON_ARRAYAGG(id) FROM items GROUP BY id, name"),
    ("date_math", """SELECT date_trunc('month', created) AS m, extract(dow FROM day), age(now(), created),
      day + interval '7 days', make_date(2026, 1, 1), to_char(created, 'YYYY-MM-DD'), created AT TIME ZONE 'UTC'
      FROM items WHERE created >= now() - interval '30 days'"""),
    ("date_bin", "SELECT date_bin('15 minutes', created, timestamptz '2026-01-01'), count(*) FROM items GROUP BY 1"),
    ("string_funcs", """SELECT upper(name), left(name, 3), regexp_replace(name, '[0-9]+', '#', 'g'),
      split_part(name, ' ', 2), concat_ws('-', id, name), format('%s:%s', id, name), md5(name), length(name)
      FROM items WHERE name ILIKE '%item%' AND name SIMILAR TO '%(1|2)%'"""),
    ("aggregates", """SELECT active, count(*), count(DISTINCT qty), avg(price), percentile_cont(0.5) WITHIN GROUP
      (ORDER BY price), stddev(ratio), string_agg(name, ', ' ORDER BY id), array_agg(id), bool_and(active)
      FROM items GROUP BY ROLLUP (active) HAVING count(*) > 1"""),
    ("grouping_sets", "SELECT active, day, GROUPING(active, day), sum(qty) FROM items GROUP BY GROUPING SETS ((active), (day), ())"),
    ("lateral_subquery", "SELECT i.id, l.n FROM items i CROSS JOIN LATERAL (SELECT count(*) AS n FROM items j WHERE j.id < i.id) l"),
    ("array_funcs", "SELECT unnest(tags), array_length(tags, 1), tags[1], array_to_string(tags, ',') FROM items WHERE 't1' = ANY(tags)"),
    ("generate_series", "SELECT g::date FROM generate_series(date '2026-01-01', date '2026-02-01', interval '1 day') g"),
    ("casts_and_types", "SELECT id::text, price::int, '2026-01-01'::date, CAST(qty AS numeric(20, 2)), uid::text, 'items'::regclass FROM items"),
    ("uuid_and_random", "SELECT gen_random_uuid(), random() < 0.5, uuidv7()"),
    ("values_list", "VALUES (1, 'a'), (2, 'b') ORDER BY 1"),
    ("set_operations", "SELECT id FROM items WHERE active UNION SELECT id FROM items WHERE qty > 5 EXCEPT SELECT 3 INTERSECT SELECT 3"),
    ("case_coalesce", "SELECT CASE WHEN price IS NULL THEN 'none' ELSE 'some' END, COALESCE(name, '?'), NULLIF(qty, 0), GREATEST(id, 3) FROM items"),
    ("exists_in", "SELECT * FROM items i WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = i.id) OR id IN (1, 2, 3)"),
    ("tablesample", "SELECT count(*) FROM items TABLESAMPLE BERNOULLI (10) REPEATABLE (42)"),
    ("distinct_on", "SELECT DISTINCT ON (active) active, id FROM items ORDER BY active, id DESC"),
    ("full_text", "SELECT ts_rank(to_tsvector('english', name), plainto_tsquery('english', 'item')) FROM items"),
    ("ts_rewrite_pure", "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)"),
    ("pg_sleep", "SELECT pg_sleep(0.01)"),
    ("xml_values", "SELECT XMLELEMENT(NAME item, XMLATTRIBUTES(id AS id), name), xpath('/a/text()', '<a>x</a>'::xml) FROM items"),
    ("table_stmt", "TABLE items"),
    ("schema_qualified_user", "SELECT id FROM public.items ORDER BY id LIMIT 10 OFFSET 5"),
    ("params", "SELECT name FROM items WHERE id = $1 AND created > $2::timestamptz"),
    ("row_compare", "SELECT * FROM items WHERE (id, qty) > (5, 0) AND ROW(id, name) IS NOT NULL"),
    ("pg_catalog_qualified_fn", "SELECT pg_catalog.lower(name), pg_catalog.now() FROM items"),
    ("row_to_json_user", "SELECT row_to_json(i) FROM items i"),
    ("collate", "SELECT name FROM items ORDER BY name COLLATE \"C\""),
    ("functions_in_from", "SELECT * FROM jsonb_to_record('{\"a\": 1}') AS x(a int)"),
    ("multi_ok", "BEGIN; SELECT 1; COMMIT"),
]

LEGIT = PSQL + INFORMATION_SCHEMA + DRIVERS + ANALYTICS
