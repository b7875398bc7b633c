// Type-level check of the ESM entry point as a Node16/NodeNext consumer sees it.
import { VoidVMClient, NotFoundError, OPERATIONS, type VM } from '@void-vm/sdk';

const client = new VoidVMClient({ baseURL: 'http://localhost:3000/api/v1', token: 't' });
const vms: VM[] = await client.vms.list();
const e: NotFoundError | undefined = undefined;
export const checks = [vms, e, OPERATIONS['GET /vms']] as const;
