import java.nio.file.Path;
import java.util.Map;
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
 * Usage: FORGE_NEO4J_PASSWORD=... java -cp <deps> NeoServer.java <homeDir> <boltPort>
 */
public final class NeoServer {
    /** Page cache for the test server (bytes): tests hold small graphs; the default would take half the RAM. */
    private static final long PAGE_CACHE_BYTES = 256L * 1024 * 1024;

    public static void main(String[] args) {
        String password = System.getenv("FORGE_NEO4J_PASSWORD");
        if (args.length != 2 || password == null || password.isEmpty()) {
            System.err.println("usage: FORGE_NEO4J_PASSWORD=<password> NeoServer <homeDir> <boltPort>");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, PAGE_CACHE_BYTES)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
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
