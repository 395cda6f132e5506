import java.sql.*;
import java.util.Properties;

/**
 * DatabaseMetaData through pgveil, as BI tools (DBeaver, Metabase, Tableau) call it.
 * Usage: java -cp postgresql.jar:DIR JdbcMeta URL USER PASSWORD [OPTIONS]
 * Prints one line per fact: "KIND<TAB>value..."; an exception prints "ERROR<TAB>where<TAB>SQLSTATE<TAB>message".
 */
public class JdbcMeta {
    static void section(String what, ThrowingRunnable r) {
        try {
            r.run();
        } catch (SQLException e) {
            System.out.println("ERROR\t" + what + "\t" + e.getSQLState() + "\t" + e.getMessage().replace('\n', ' '));
        }
    }

    interface ThrowingRunnable { void run() throws SQLException; }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        if (args.length > 3 && !args[3].isEmpty()) props.setProperty("options", args[3]);
        props.setProperty("prepareThreshold", "1");  // server-side prepared statements from the first execution
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("PRODUCT\t" + md.getDatabaseProductName() + "\t" + md.getDatabaseProductVersion());
            section("getCatalogs", () -> {
                try (ResultSet rs = md.getCatalogs()) {
                    while (rs.next()) System.out.println("CATALOG\t" + rs.getString("TABLE_CAT"));
                }
            });
            section("getSchemas", () -> {
                try (ResultSet rs = md.getSchemas()) {
                    while (rs.next()) System.out.println("SCHEMA\t" + rs.getString("TABLE_SCHEM"));
                }
            });
            section("getTables", () -> {
                try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                    while (rs.next()) System.out.println("TABLE\t" + rs.getString("TABLE_SCHEM") + "\t" + rs.getString("TABLE_NAME"));
                }
            });
            section("getColumns", () -> {
                try (ResultSet rs = md.getColumns(null, "public", "claims", "%")) {
                    while (rs.next()) System.out.println("COLUMN\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("COLUMN_NAME")
                            + "\t" + rs.getString("TYPE_NAME"));
                }
            });
            section("getPrimaryKeys", () -> {
                try (ResultSet rs = md.getPrimaryKeys(null, "public", "claims")) {
                    while (rs.next()) System.out.println("PK\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("COLUMN_NAME")
                            + "\t" + rs.getString("PK_NAME"));
                }
            });
            section("getIndexInfo", () -> {
                try (ResultSet rs = md.getIndexInfo(null, "public", "claims", false, true)) {
                    while (rs.next()) System.out.println("INDEX\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("INDEX_NAME"));
                }
            });
            section("getImportedKeys", () -> {
                try (ResultSet rs = md.getImportedKeys(null, "public", "claims")) {
                    while (rs.next()) System.out.println("FK\t" + rs.getString("FKTABLE_NAME") + "\t" + rs.getString("PKTABLE_NAME"));
                }
            });
            section("select", () -> {
                try (PreparedStatement ps = conn.prepareStatement("SELECT claim_id, state FROM claims WHERE claim_id >= ? ORDER BY claim_id")) {
                    for (int round = 0; round < 2; round++) {  // the second execution uses the named server-side statement
                        ps.setInt(1, 1);
                        try (ResultSet rs = ps.executeQuery()) {
                            while (rs.next()) System.out.println("ROW\t" + round + "\t" + rs.getInt(1) + "\t" + rs.getString(2));
                        }
                    }
                }
            });
            System.out.println("DONE");
        }
    }
}
