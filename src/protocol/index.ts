// The JSON-RPC 2.0 protocol layer shared by the server, the transports, the relay and the client.
export * from './messages.js';
export * from './frame.js';
export * from './responses.js';
export * from './line-reader.js';
