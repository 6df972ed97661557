import inet.ipaddr.IPAddressString;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

/**
 * A real Neo4j 5.26 community server (embedded DBMS + Bolt connector) bound to loopback, for the kernel's
 * integration tests and local development. Started by scripts/services/neo4j.ts; prints one READY line once the
 * password is set. The password comes from the environment (FORGE_NEO4J_PASSWORD) so it never shows in `ps`.
 *
 * <p>Least privilege: the server's only client is the kernel, so everything Cypher could reach beyond the graph is
 * closed here, as a second layer behind the kernel's CypherGuard (each checked by test/integration/neo4j-hardening
 * .test.ts, or by hand where a test would have to restart the shared server):
 * <ul>
 *   <li>no LOAD CSV from files, and the file root confined to an empty folder in case that is ever turned back on;
 *   <li>no LOAD CSV over the network: every IPv4 and IPv6 address is blocked (checked after name resolution);
 *   <li>no plugin procedures or functions beyond {@link #PROCEDURE_ALLOWLIST};
 *   <li>no usage reports sent to Neo4j (they are on by default and phone home from the test machine).
 * </ul>
 * Not closable in community edition: built-in procedures (see {@link #PROCEDURE_ALLOWLIST}), and the admin user's
 * system commands (community has no roles); the CypherGuard's plan check is the only layer for those.
 *
 * Usage: FORGE_NEO4J_PASSWORD=... java -cp <deps> NeoServer.java <homeDir> <boltPort>
 */
public final class NeoServer {
    /** Page cache for the test server (bytes): tests hold small graphs; the default would take half the RAM. */
    private static final long PAGE_CACHE_BYTES = 256L * 1024 * 1024;

    /**
     * dbms.security.procedures.allowlist. Measured on 5.26: it only gates procedures and functions loaded from plugin
     * jars (a plugin's `forge.probe` is refused with "not on the allowlist and won't be loaded", a listed plugin
     * function loads). Built-ins (db.*, dbms.*, tx.*) are compiled as built-in and skip the check: with this list
     * `CALL dbms.listConfig()` and `CALL db.createLabel('x')` still run, and SHOW PROCEDURES lists the same 48. So in
     * effect no plugin code runs; the names are the read-only built-ins the kernel may allow overlays
     * (src/store/neo4j-store.ts itself calls no procedure), kept in case a later version applies the list to built-ins.
     */
    private static final List<String> PROCEDURE_ALLOWLIST =
            List.of("db.labels", "db.relationshipTypes", "db.propertyKeys");

    /** internal.dbms.cypher_ip_blocklist (5.26 has no public name for it): LOAD CSV may reach no address at all. */
    private static final List<IPAddressString> LOAD_CSV_BLOCKED_ADDRESSES =
            List.of(new IPAddressString("0.0.0.0/0"), new IPAddressString("::/0"));

    public static void main(String[] args) throws IOException {
        String password = System.getenv("FORGE_NEO4J_PASSWORD");
        if (args.length != 2 || password == null || password.isEmpty()) {
            System.err.println("usage: FORGE_NEO4J_PASSWORD=<password> NeoServer <homeDir> <boltPort>");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        // server.directories.import defaults to the home folder, whose logs and store files a file URL could read.
        Path importRoot = Files.createDirectories(home.resolve("import"));

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, PAGE_CACHE_BYTES)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .setConfig(GraphDatabaseSettings.allow_file_urls, false)
                .setConfig(GraphDatabaseSettings.load_csv_file_url_root, importRoot)
                .setConfig(GraphDatabaseInternalSettings.cypher_ip_blocklist, LOAD_CSV_BLOCKED_ADDRESSES)
                .setConfig(GraphDatabaseSettings.procedure_allowlist, PROCEDURE_ALLOWLIST)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown, "neo4j-shutdown"));

        try {
            dbms.database("system").executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED", Map.of("password", password));
        } catch (RuntimeException e) {
            // A restart over an existing data folder already has this password; Neo4j refuses to "change" it.
            if (!String.valueOf(e.getMessage()).contains("Old password and new password cannot be the same")) {
                System.err.println("FORGE_NEO4J_FAILED could not set the password: " + e.getMessage());
                // The DBMS threads are not daemons: without an explicit exit the JVM would linger, half-started.
                System.exit(1);
            }
        }
        System.out.println("FORGE_NEO4J_READY bolt://127.0.0.1:" + port);
        System.out.flush();
    }
}
