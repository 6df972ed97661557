import { inject } from 'vitest';
import { Neo4jStore } from '../../src/store/neo4j-store.ts';
import { storeContract } from '../support/store-contract.ts';

const services = inject('services');
storeContract('neo4j (real server)', () =>
  Promise.resolve(new Neo4jStore({ uri: services.NEO4J_URI, user: services.NEO4J_USER, password: services.NEO4J_PASSWORD, intervalMs: 10 })),
);
