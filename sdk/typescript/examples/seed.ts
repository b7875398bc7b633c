import { VoidVMClient } from '@void-vm/sdk'
const client = new VoidVMClient({
baseURL: 'http://localhost:3000/api/v1',
token: 'your-jwt-token',
})
// 获取虚拟机列表
const vms = await client.vms.list()
// 创建虚拟机
const newVm = await client.vms.create({
name: 'my-vm',
cpu: 2,
memory: 2048,
disk: 20,
})
// 启动虚拟机
await client.vms.start(newVm.id)
