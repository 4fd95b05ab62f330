// @azure/identity, unmodified: one token, printed as JSON.
//   node node_identity.js ManagedIdentityCredential|DefaultAzureCredential KIND VALUE RESOURCE
// KIND: system, client_id, object_id, resource_id.
const identity = require("@azure/identity");
const [kindOfCredential, kind, value, resource] = process.argv.slice(2);
const names = { client_id: "clientId", object_id: "objectId", resource_id: "resourceId" };
const options = kind === "system" ? {} : { [names[kind]]: value };
const start = performance.now();
const seconds = () => (performance.now() - start) / 1000;
new identity[kindOfCredential](options)
  .getToken(resource + ".default")
  .then(
    (token) => console.log(JSON.stringify({ token: token.token, seconds: seconds() })),
    (error) => console.log(JSON.stringify({ error: String(error.message).slice(0, 500), type: error.name, seconds: seconds() })),
  );
