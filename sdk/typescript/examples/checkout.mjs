// @ts-check
// Typical flow 1, "E-commerce Checkout": a guest session, the shopper's email, then the order.
//
// The cart and the checkout (`sdk.eshop.*` in the reference) belong to the commerce system, not to
// storecrm, so this script stops at what storecrm owns: after checkout, the commerce backend links
// the order to the profile with its API key (`POST /v1/stores/{storeId}/profiles/{id}/orders`).
//
//   STORECRM_URL=http://127.0.0.1:8080 STORE_ID=... API_KEY=sk_... node examples/checkout.mjs
import { createClient } from "@storecrm/sdk";

import { config, demoEmail, requireApiKey } from "./_shared.mjs";

const { baseUrl, storeId, apiKey } = config();

// The storefront's client: no API key. In a browser, add `storage: localStorageStorage("shop.session")`
// so the session survives reloads.
const storefront = createClient({ baseUrl, storeId }).crm;

// 1. Initialize a guest profile session (stored by the client; later calls send it).
const guest = await storefront.initialize();
console.log(`1. guest profile ${guest.profile_id} (session ${guest.id})`);

// 2. Attach the shopper's email. The guest session is sent along, so the guest keeps its id (or,
//    when a profile already has this email, is merged into it: its cart and subscriptions carry over).
const email = demoEmail("shopper");
const session = await storefront.connect({ email });
console.log(`2. connected ${email}: profile ${session.profile_id}${session.profile_id === guest.profile_id ? " (same profile)" : " (existing profile)"}`);

// 3. Checkout happens in the commerce system (cart.current / cart.update / cart.checkout in the
//    reference). Its backend then links the order to the profile, with the store's API key:
const backend = createClient({ baseUrl, storeId, apiKey: requireApiKey(apiKey) }).crm;
const orderId = process.env.ORDER_ID ?? `order-${Date.now().toString(36)}`;
const order = await backend.linkOrder({
  id: session.profile_id,
  order_id: orderId,
  total: 4999,
  currency: "EUR",
  status: "placed",
  placed_at: Math.floor(Date.now() / 1000),
});
console.log(`3. order ${order.order_id} linked to profile ${order.profile_id}`);

const orders = await backend.getOrders({ id: session.profile_id });
console.log(`   the profile has ${orders.items.length} order(s)`);
console.log(`done: ${JSON.stringify({ profile_id: session.profile_id, email, order_id: order.order_id })}`);
