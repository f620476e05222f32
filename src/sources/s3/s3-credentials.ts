// Which credentials an S3 pull signs with: the credential alias's secret
// (JSON with accessKeyId and secretAccessKey, optionally sessionToken), else
// the standard AWS environment variables, else none (an anonymous, public
// bucket). The secret is read only here and never appears in a message.
import { ModelCacheError, quote } from "../../errors.js";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export function s3Credentials(credential: { alias: string; secret: string } | undefined, env: NodeJS.ProcessEnv = process.env): S3Credentials | undefined {
  if (credential) return parseSecret(credential.alias, credential.secret);
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (accessKeyId && secretAccessKey) return { accessKeyId, secretAccessKey, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) };
  return undefined;
}

function parseSecret(alias: string, secret: string): S3Credentials {
  const refuse = () =>
    new ModelCacheError(
      "failed_precondition",
      `the secret of credential alias ${quote(alias)} is not S3 credentials: store JSON such as {"accessKeyId": "...", "secretAccessKey": "..."} (optionally "sessionToken") under that alias with PutSecret`,
    );
  let value: unknown;
  try {
    value = JSON.parse(secret);
  } catch {
    // the parser's message may quote the secret: only the alias is named
    throw refuse();
  }
  const { accessKeyId, secretAccessKey, sessionToken } = (value ?? {}) as Record<string, unknown>;
  if (typeof accessKeyId !== "string" || accessKeyId === "" || typeof secretAccessKey !== "string" || secretAccessKey === "") throw refuse();
  if (sessionToken !== undefined && typeof sessionToken !== "string") throw refuse();
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}
