// Type-level check of the ESM entry point as a Node16/NodeNext consumer sees it.
import { VoidVMClient, NotFoundError, OPERATIONS, type Operation, type VM } from '@void-vm/sdk';

const client = new VoidVMClient({ baseURL: 'http://localhost:3000/api/v1', token: 't' });
const vms: VM[] = await client.vms.list();
const e: NotFoundError | undefined = undefined;
const starting = await client.vms.start('vm-1', { wait: false });
const op: Operation = await client.operations.wait(starting.operation, { timeoutMs: 60_000 });
export const checks = [vms, e, OPERATIONS['GET /vms'], op.status] as const;
