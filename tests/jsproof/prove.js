// Drives the CardSavr sandbox with the official Strivve SDK, end to end:
// login (the SDK verifies every signed response), merchant sites, cardholder,
// card, account, a job with good_email/tfa, the TFA prompt answered with its
// envelope id, and the job's end. Prints one JSON object per line; the last
// line is {"result": ...}. Configuration comes from SANDBOX_* variables and
// the sandbox certificate from NODE_EXTRA_CA_CERTS.
"use strict";

const { CardsavrSession } = require(
  "@strivve/strivve-sdk/lib/cardsavr/CardsavrJSLibrary-2.0"
);

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

const report = (step, details) => {
  console.log(JSON.stringify({ step, ...details }));
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const HYDRATE = {
  "x-cardsavr-hydration": JSON.stringify(["credential_requests", "account"]),
};

function signed(response) {
  // sendRequest verifies the signature whenever these headers are present
  // and throws if it does not match; report that they were there.
  return Boolean(
    response.headers.get("x-cardsavr-signature") &&
      response.headers.get("x-cardsavr-authorization")
  );
}

async function waitFor(session, jobId, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const response = await session.getSingleSiteJobs(jobId, {}, { ...HYDRATE });
    if (predicate(response.body)) {
      return response.body;
    }
    await sleep(100);
  }
  throw new Error(`job ${jobId} did not reach the expected state in time`);
}

async function main() {
  const session = new CardsavrSession(
    env("SANDBOX_URL"),
    env("SANDBOX_APP_KEY"),
    env("SANDBOX_APP_NAME"),
    true // reject certificates that NODE_EXTRA_CA_CERTS does not vouch for
  );
  const login = await session.init(env("SANDBOX_USERNAME"), env("SANDBOX_PASSWORD"));
  report("login", { user_id: login.body.user_id, signed: signed(login) });

  const sites = await session.getMerchantSites(
    { tags: "synthetic", host: "synthetic-sites.sandbox.local/standard" },
    { page: 1, page_length: 10 }
  );
  const site = sites.body[0];
  report("merchant_sites", {
    count: sites.body.length,
    site_id: site.id,
    paging: JSON.parse(sites.headers.get("x-cardsavr-paging")),
    signed: signed(sites),
  });

  const cardholder = await session.createCardholder(
    { first_name: "Jordan", last_name: "Proof", type: "persistent_creds" },
    null,
    "default"
  );
  report("cardholder", {
    status: cardholder.statusCode,
    id: cardholder.body.id,
    signed: signed(cardholder),
  });

  const card = await session.createCard({
    cardholder_id: cardholder.body.id,
    pan: "4111111111111111",
    cvv: "123",
    expiration_month: "12",
    expiration_year: "30",
    name_on_card: "Jordan Proof",
  });
  report("card", {
    status: card.statusCode,
    id: card.body.id,
    last_4: card.body.last_4,
    has_pan: "pan" in card.body,
    has_cvv: "cvv" in card.body,
  });

  const account = await session.createAccount({
    cardholder_id: cardholder.body.id,
    merchant_site_id: site.id,
    account_link: { username: "good_email", password: "tfa" },
  });
  report("account", { status: account.statusCode, id: account.body.id });

  const created = await session.createSingleSiteJobs(
    [
      {
        status: "REQUESTED",
        cardholder_id: cardholder.body.id,
        card_id: card.body.id,
        account_id: account.body.id,
      },
    ],
    null,
    { ...HYDRATE }
  );
  const jobId = created.body[0].id;
  report("job", {
    status: created.statusCode,
    id: jobId,
    job_status: created.body[0].status,
    plural: Array.isArray(created.body),
  });

  const pending = await waitFor(
    session,
    jobId,
    (job) => job.credential_requests && job.credential_requests.length > 0,
    30000
  );
  const request = pending.credential_requests[0];
  report("credential_request", {
    job_status: pending.status,
    type: request.type,
    key_names: request.account_link.map((field) => field.key_name),
    envelope_id_length: request.envelope_id.length,
  });

  const answered = await session.updateSingleSiteJob(
    jobId,
    { account: { account_link: { tfa: "1234" } } },
    null,
    { "x-cardsavr-envelope-id": request.envelope_id }
  );
  report("answer", { status: answered.statusCode, job_status: answered.body.status });

  const finished = await waitFor(
    session,
    jobId,
    (job) => Boolean(job.termination_type),
    30000
  );
  report("finished", {
    job_status: finished.status,
    termination_type: finished.termination_type,
  });

  await session.end();
  report("result", {
    result: {
      status: finished.status,
      termination_type: finished.termination_type,
    },
  });
}

main().catch((error) => {
  const detail = error && error.errors ? JSON.stringify(error.errors) : "";
  console.error(`jsproof failed: ${error && error.message} ${detail}`);
  process.exit(1);
});
