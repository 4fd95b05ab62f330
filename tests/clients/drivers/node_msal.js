// @azure/msal-node's ManagedIdentityApplication, unmodified: one token, printed as JSON.
//   node node_msal.js KIND VALUE RESOURCE      # KIND: system, client_id, object_id, resource_id
const { ManagedIdentityApplication } = require("@azure/msal-node");
const [kind, value, resource] = process.argv.slice(2);
const names = { client_id: "userAssignedClientId", object_id: "userAssignedObjectId", resource_id: "userAssignedResourceId" };
const config = kind === "system" ? {} : { managedIdentityIdParams: { [names[kind]]: value } };
const start = performance.now();
const seconds = () => (performance.now() - start) / 1000;
new ManagedIdentityApplication(config)
  .acquireToken({ resource })
  .then(
    (result) => console.log(JSON.stringify({ token: result.accessToken, seconds: seconds() })),
    (error) => console.log(JSON.stringify({ error: String(error.message).slice(0, 500), type: error.name, seconds: seconds() })),
  );
