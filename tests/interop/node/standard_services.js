// grpc-js asking a server for its service list through server reflection (grpc.reflection.v1alpha),
// as a grpcurl-like tool would. Usage: node standard_services.js PROTOS_DIR PORT. Prints
// "SERVICE <name>" per listed service; a failed call exits non-zero with the reason on stderr.
'use strict';
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [protosDir, port] = process.argv.slice(2);
const def = protoLoader.loadSync(path.join(protosDir, 'grpc', 'reflection', 'v1alpha', 'reflection.proto'), { keepCase: true, defaults: true, oneofs: true });
const { ServerReflection } = grpc.loadPackageDefinition(def).grpc.reflection.v1alpha;
const client = new ServerReflection(`127.0.0.1:${port}`, grpc.credentials.createInsecure());

const call = client.ServerReflectionInfo({ deadline: Date.now() + 10000 });
const names = [];
call.on('data', (response) => {
  if (response.message_response !== 'list_services_response') throw new Error(`unexpected response ${JSON.stringify(response)}`);
  names.push(...response.list_services_response.service.map((s) => s.name));
});
call.on('error', (e) => { console.error(e.stack || e); process.exit(1); });
call.on('end', () => {
  names.forEach((n) => console.log(`SERVICE ${n}`));
  client.close();
});
call.write({ list_services: '*' });
call.end();
