import { MemoryStore } from '../../src/store/memory-store.ts';
import { storeContract } from '../support/store-contract.ts';

storeContract('memory', () => Promise.resolve(new MemoryStore()));
