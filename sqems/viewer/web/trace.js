// What a batch, lot, machine window or alarm reached, and the causes of its defects.
import { apiKey, showError } from "/viewer/app/api.js";

apiKey().then(() => { document.body.dataset.state = "ready"; }).catch(showError);
