// Type-level check of the CommonJS entry point (require condition) as a Node16 consumer sees it.
import sdk = require('@void-vm/sdk');

const client = new sdk.VoidVMClient({ baseURL: 'http://localhost:3000/api/v1', token: 't' });
export const p: Promise<sdk.VM[]> = client.vms.list();
export const op: 'vms.list' = sdk.OPERATIONS['GET /vms'];
